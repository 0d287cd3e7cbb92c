-- Demo code host: pull requests (deduplicated on the idempotency key) and direct pushes (not deduplicated).
CREATE TABLE pull_requests (
    pr_id bigserial PRIMARY KEY,
    tenant_id text NOT NULL,
    repo text NOT NULL,
    title text NOT NULL,
    files text[] NOT NULL,
    target_branch text NOT NULL DEFAULT 'main',
    status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'merged', 'closed')),
    idempotency_key text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, idempotency_key)
);

-- A push has no idempotency key, like `git push` of a new commit: calling it twice pushes twice.
CREATE TABLE commits (
    commit_id bigserial PRIMARY KEY,
    tenant_id text NOT NULL,
    repo text NOT NULL,
    branch text NOT NULL,
    files text[] NOT NULL,
    sha text NOT NULL,
    pushed_at timestamptz NOT NULL DEFAULT now()
);
