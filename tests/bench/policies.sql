-- `make bench`: 20 policies in the bench tenant's default set, a realistic mix
-- that the bench request (gpt-4o-mini, no tools, no user, a clean prompt)
-- passes, so every one of them is evaluated on every request.
-- psql -v tenant=<uuid>
INSERT INTO renlayer.policy_sets (id, tenant_id, name, is_tenant_default)
VALUES (gen_random_uuid(), :'tenant', 'bench', true);
INSERT INTO renlayer.policies (id, tenant_id, policy_set_id, name, priority, conditions, action, message)
SELECT gen_random_uuid(), :'tenant', (SELECT id FROM renlayer.policy_sets WHERE tenant_id = :'tenant' AND name = 'bench'),
       'bench ' || n, n, c::jsonb, a, 'bench policy ' || n
FROM (VALUES
  (1,  '{"model": ["gpt-3.5*", "text-davinci*"]}', 'DENY'),
  (2,  '{"tool": ["shell_*", "exec_*", {"regex": "^(rm|dd|mkfs)_"}]}', 'DENY'),
  (3,  '{"dlp": ["AWS_*", "PRIVATE_KEY"]}', 'DENY'),
  (4,  '{"user": "contractor-*", "model": "*-preview"}', 'DENY'),
  (5,  '{"input_tokens_above": 100000}', 'DENY'),
  (6,  '{"action": "mcp", "tool": "delete_*"}', 'DENY'),
  (7,  '{"path": "/v1/files*", "method": ["POST", "DELETE"]}', 'DENY'),
  (8,  '{"headers": {"x-debug": true}}', 'FLAG'),
  (9,  '{"model": {"regex": "(?:^|-)(?:o1|o3)(?:-|$)"}, "user": "intern-*"}', 'DENY'),
  (10, '{"action": "embedding", "input_tokens_above": 20000}', 'FLAG'),
  (11, '{"not": {"headers": {"x-renlayer-user": true}}, "model": "gpt-5*"}', 'FLAG'),
  (12, '{"any_of": [{"tool": "transfer_funds"}, {"tool": "wire_*"}]}', 'DENY'),
  (13, '{"dlp": "US_SSN"}', 'FLAG'),
  (14, '{"time": {"start": "02:00", "end": "04:00", "tz": "Europe/Paris", "days": ["sat", "sun"]}, "model": "claude-opus*"}', 'DENY'),
  (15, '{"path": {"regex": "^/v1/(fine_tuning|batches)"}}', 'DENY'),
  (16, '{"headers": {"x-environment": ["staging", "dev"]}, "model": "*-32k"}', 'FLAG'),
  (17, '{"all_of": [{"action": "chat"}, {"input_tokens_above": 60000}, {"model": "gpt-4o"}]}', 'FLAG'),
  (18, '{"user": {"regex": "^svc-(billing|payroll)$"}, "tool": "*"}', 'FLAG'),
  (19, '{"method": "DELETE"}', 'DENY'),
  (20, '{"dlp": "*", "user": "external-*"}', 'DENY')
) AS p(n, c, a);
