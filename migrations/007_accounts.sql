-- Accounts, server-side sessions and login attempts (issue 8 item 1).
-- Passwords are argon2id hashes; session cookies hold a random token of
-- which only the SHA-256 is stored here.

CREATE TABLE IF NOT EXISTS app_users (
    id            bigserial PRIMARY KEY,
    username      text NOT NULL UNIQUE CHECK (username ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('agent', 'supervisor', 'department', 'admin')),
    agent_id      text NOT NULL DEFAULT '',
    department    text NOT NULL DEFAULT '',
    display_name  text NOT NULL DEFAULT '',
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (role <> 'agent' OR agent_id <> ''),
    CHECK (role <> 'department' OR department <> '')
);

CREATE TABLE IF NOT EXISTS auth_sessions (
    token_hash   text PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES app_users (id) ON DELETE CASCADE,
    csrf_token   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS auth_sessions_user_idx ON auth_sessions (user_id);
CREATE INDEX IF NOT EXISTS auth_sessions_expires_idx ON auth_sessions (expires_at);

CREATE TABLE IF NOT EXISTS login_attempts (
    id       bigserial PRIMARY KEY,
    username text NOT NULL,
    remote   text NOT NULL DEFAULT '',
    success  boolean NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS login_attempts_user_idx ON login_attempts (username, at);
CREATE INDEX IF NOT EXISTS login_attempts_remote_idx ON login_attempts (remote, at);
