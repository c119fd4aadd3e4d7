-- Argo CD health check for tfleet.dev/InferenceService.
-- Install: see docs/argocd.md (key resource.customizations.health.tfleet.dev_InferenceService).
--
--   Progressing  the operator has not observed the current generation yet, a rollout runs,
--                Reconciling=True (a rolling update, pods not all ready), or no pod is ready yet
--   Suspended    a canary rollout is paused
--   Degraded     Degraded=True, the rollout rolled back, or the spec is invalid
--   Healthy      Ready=True
local hs = {}

local function condition(status, type_)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local status = obj.status
local generation = (obj.metadata and obj.metadata.generation) or 0
if status == nil or status.observedGeneration == nil or status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready = condition(status, "Ready")
local degraded = condition(status, "Degraded")
local phase = status.rollout and status.rollout.phase or nil

if ready ~= nil and ready.status == "False" and ready.reason == "InvalidSpec" then
  hs.status = "Degraded"
  hs.message = text(ready, "The spec is invalid")
  return hs
end
if phase == "RolledBack" then
  hs.status = "Degraded"
  hs.message = (status.rollout.message ~= nil and status.rollout.message ~= "") and status.rollout.message
    or "The rollout was rolled back"
  return hs
end
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = text(degraded, "Degraded")
  return hs
end
if phase == "Paused" then
  hs.status = "Suspended"
  hs.message = (status.rollout.message ~= nil and status.rollout.message ~= "") and status.rollout.message
    or "The rollout is paused"
  return hs
end
if phase == "Progressing" or phase == "Promoting" then
  hs.status = "Progressing"
  hs.message = (status.rollout.message ~= nil and status.rollout.message ~= "") and status.rollout.message
    or "A rollout is in progress"
  return hs
end
local reconciling = condition(status, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = text(reconciling, "Reconciling")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready, "Ready")
  return hs
end
hs.status = "Progressing"
hs.message = text(ready, "Waiting for the model servers to become ready")
return hs
