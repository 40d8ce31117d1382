-- Policy: never run on the host runtime (it runs the command with no isolation at all).
-- plan.runtime is what was asked for (--runtime, the config's runtime:, MOAT_RUNTIME); when
-- nothing was asked, moat only ever picks docker, podman or bwrap by itself.
-- Install: copy to /etc/moat/policy.lua or ~/.config/moat/policy.lua.
return function(plan, ctx)
  if plan.runtime == "host" then
    ctx.deny("runtime", "the host runtime runs the command without any isolation; use docker, podman or bwrap")
  end
end
