-- Sample application schema for stackback's tests and the README's try script.
-- Deterministic (no random(), no now()) so two databases seeded from it compare equal.
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE SEQUENCE invoice_no START 1000;

CREATE TABLE users (
    id          bigserial PRIMARY KEY,
    email       text NOT NULL UNIQUE,
    name        text,
    mood        mood,
    profile     jsonb,
    avatar      bytea,
    created_at  timestamptz NOT NULL,
    balance     numeric(12, 2),
    tags        text[]
);

CREATE TABLE orders (
    id          bigint PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id),
    invoice     bigint NOT NULL DEFAULT nextval('invoice_no'),
    total       numeric(12, 2) NOT NULL,
    note        text,
    placed_at   timestamptz NOT NULL,
    updated_at  timestamptz
);

CREATE INDEX orders_user_idx ON orders (user_id);
CREATE INDEX users_profile_idx ON users USING gin (profile);

CREATE VIEW big_spenders AS
    SELECT u.id, u.email, sum(o.total) AS spent
    FROM users u JOIN orders o ON o.user_id = u.id
    GROUP BY u.id, u.email;

CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := NEW.placed_at + interval '1 day';
    RETURN NEW;
END
$$;

CREATE TRIGGER orders_touch BEFORE UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

INSERT INTO users (email, name, mood, profile, avatar, created_at, balance, tags)
SELECT
    'user' || g || '@example.com',
    CASE g % 5
        WHEN 0 THEN NULL
        WHEN 1 THEN 'Zoë Ångström ' || g
        WHEN 2 THEN '東京の利用者 ' || g
        WHEN 3 THEN 'emoji 🎉 user ' || g
        ELSE 'plain user ' || g
    END,
    (ARRAY['sad', 'ok', 'happy']::mood[])[1 + g % 3],
    CASE WHEN g % 7 = 0 THEN NULL
         ELSE jsonb_build_object('plan', 'p' || (g % 4), 'seats', g % 50, 'flags', jsonb_build_array(g % 2 = 0, 'x'))
    END,
    CASE WHEN g % 3 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END,
    timestamptz '2024-01-01 00:00:00+00' + g * interval '37 minutes',
    CASE WHEN g % 11 = 0 THEN NULL ELSE (g * 13.37)::numeric(12, 2) END,
    ARRAY['t' || (g % 3), 'tag with space', NULL]
FROM generate_series(1, 2000) AS g;

INSERT INTO orders (id, user_id, total, note, placed_at)
SELECT
    g,
    1 + g % 2000,
    ((g * 7) % 100000) / 100.0,
    CASE WHEN g % 4 = 0 THEN NULL ELSE 'order note ' || g || E' with a tab\there and a quote '' and a backslash \\' END,
    timestamptz '2024-06-01 00:00:00+00' + g * interval '1 minute'
FROM generate_series(1, 120000) AS g;

UPDATE orders SET total = total + 1 WHERE id % 1000 = 0;
