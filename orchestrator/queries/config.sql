-- Named queries of the settings (orchestrator/config.py, `consistency config`).

-- name: settings_list --
SELECT key, value, kind, min_value, max_value, env_var, description, updated_at
  FROM consistency.settings
 ORDER BY key

-- name: set_setting --
SELECT consistency.set_setting(%(key)s, %(value)s::jsonb, %(actor)s)
