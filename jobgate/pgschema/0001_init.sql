-- The gate's store on PostgreSQL (jobgate/store_postgres.go). Every rule a
-- replica relies on is the database's: a gate that misbehaves, or two that
-- race, hit these constraints and triggers, not a convention.
--
-- Custom SQLSTATEs (class JG), mapped by the Go code to the same errors as
-- the bbolt store:
--   JG001 a state would move backward               -> ErrStateBackward
--   JG002 an admitted key (a non-pending runner) would be forgotten
--   JG003 a runner would change its key or name
--   JG004 the audit log would be edited, deleted or truncated
--   JG005 an audit record does not extend the chain head (a fork)
--   JG006 a VM or job that is not finished would be forgotten
--   JG007 the nonce key would change

CREATE FUNCTION jobgate_refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the gate store''s table % is never truncated', TG_TABLE_NAME USING ERRCODE = 'JG004';
END $$;

-- meta: the nonce HMAC key, shared by every replica, written once.
CREATE TABLE meta (
    key   text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL,
    CHECK (key <> 'nonceKey' OR length(value) = 32)
);

CREATE FUNCTION jobgate_meta_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.key = 'nonceKey' THEN
        RAISE EXCEPTION 'the nonce key is written once' USING ERRCODE = 'JG007';
    END IF;
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER meta_guard BEFORE UPDATE OR DELETE ON meta FOR EACH ROW EXECUTE FUNCTION jobgate_meta_guard();
CREATE TRIGGER meta_no_truncate BEFORE TRUNCATE ON meta EXECUTE FUNCTION jobgate_refuse_truncate();

-- used_nonces: a nonce is spent once; the row outlives its expiry (after
-- which the nonce is refused anyway) until pruned.
CREATE TABLE used_nonces (
    nonce      bytea PRIMARY KEY,
    expires_ns bigint NOT NULL
);
CREATE INDEX used_nonces_expiry ON used_nonces (expires_ns);

-- runners: one row per environment key, ever. The primary key is the
-- "never admitted twice" rule; a row leaves only while pending (a released
-- reservation), and its state only moves forward.
CREATE FUNCTION jobgate_runner_rank(s text) RETURNS int LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE s WHEN 'pending' THEN 0 WHEN 'live' THEN 1 WHEN 'deregistered' THEN 2 WHEN 'removed' THEN 2 END
$$;

CREATE TABLE runners (
    key_digest text COLLATE "C" PRIMARY KEY,
    name       text COLLATE "C" NOT NULL UNIQUE,
    state      text COLLATE "C" NOT NULL CHECK (state IN ('pending', 'live', 'deregistered', 'removed')),
    record     jsonb NOT NULL,
    CHECK (record->>'keyDigest' = key_digest AND record->>'name' = name AND record->>'state' = state)
);

CREATE FUNCTION jobgate_runners_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.state <> 'pending' THEN
            RAISE EXCEPTION 'runner % is %: an admitted key is never forgotten', OLD.name, OLD.state USING ERRCODE = 'JG002';
        END IF;
        RETURN OLD;
    END IF;
    IF NEW.key_digest <> OLD.key_digest OR NEW.name <> OLD.name THEN
        RAISE EXCEPTION 'runner % may not change its key or name', OLD.name USING ERRCODE = 'JG003';
    END IF;
    IF jobgate_runner_rank(NEW.state) < jobgate_runner_rank(OLD.state) THEN
        RAISE EXCEPTION 'runner % is %, not %', OLD.name, OLD.state, NEW.state USING ERRCODE = 'JG001';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER runners_guard BEFORE UPDATE OR DELETE ON runners FOR EACH ROW EXECUTE FUNCTION jobgate_runners_guard();
CREATE TRIGGER runners_no_truncate BEFORE TRUNCATE ON runners EXECUTE FUNCTION jobgate_refuse_truncate();

-- The audit log: one hash chain for every replica. audit_head is the
-- chain's head; a record goes in only as the head's successor (the insert
-- trigger checks it under the head's row lock and advances the head), so
-- two gates cannot fork the chain: the second waits for the first's commit
-- and then fails the check. The chain hashes are computed by the gate
-- (jobgate/audit.go), exactly as for the bbolt store.
CREATE TABLE audit_head (
    id   boolean PRIMARY KEY DEFAULT true CHECK (id),
    seq  bigint NOT NULL CHECK (seq >= 0),
    hash text COLLATE "C" NOT NULL
);
INSERT INTO audit_head (seq, hash) VALUES (0, '');

CREATE TABLE audit_log (
    seq    bigint PRIMARY KEY CHECK (seq > 0),
    prev   text COLLATE "C" NOT NULL UNIQUE,
    hash   text COLLATE "C" NOT NULL UNIQUE CHECK (hash <> ''),
    record json NOT NULL,
    CHECK ((seq = 1) = (prev = ''))
);

CREATE FUNCTION jobgate_audit_append() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head audit_head;
BEGIN
    SELECT * INTO STRICT head FROM audit_head FOR UPDATE;
    IF NEW.seq <> head.seq + 1 OR NEW.prev <> head.hash THEN
        RAISE EXCEPTION 'audit record % does not follow the chain head (record %)', NEW.seq, head.seq USING ERRCODE = 'JG005';
    END IF;
    UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash;
    RETURN NEW;
END $$;
CREATE TRIGGER audit_append BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION jobgate_audit_append();

CREATE FUNCTION jobgate_audit_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The head moves only one step, and only from jobgate_audit_append.
    IF TG_TABLE_NAME = 'audit_head' AND TG_OP = 'UPDATE' AND NEW.seq = OLD.seq + 1 AND pg_trigger_depth() > 1 THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only (% on %)', TG_OP, TG_TABLE_NAME USING ERRCODE = 'JG004';
END $$;
CREATE TRIGGER audit_log_guard BEFORE UPDATE OR DELETE ON audit_log FOR EACH ROW EXECUTE FUNCTION jobgate_audit_guard();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log EXECUTE FUNCTION jobgate_refuse_truncate();
CREATE TRIGGER audit_head_guard BEFORE UPDATE OR DELETE ON audit_head FOR EACH ROW EXECUTE FUNCTION jobgate_audit_guard();
CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head EXECUTE FUNCTION jobgate_refuse_truncate();

-- Fleet state (jobgate/fleetstate.go): VMs and workflow jobs whose states
-- only move forward, and which are forgotten only once finished.
CREATE FUNCTION jobgate_vm_rank(s text) RETURNS int LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE s WHEN 'launching' THEN 0 WHEN 'admitted' THEN 1 WHEN 'busy' THEN 2 WHEN 'done' THEN 3 WHEN 'destroyed' THEN 4 END
$$;

CREATE TABLE vms (
    name       text COLLATE "C" PRIMARY KEY,
    state      text COLLATE "C" NOT NULL CHECK (state IN ('launching', 'admitted', 'busy', 'done', 'destroyed')),
    updated_at timestamptz NOT NULL,
    record     jsonb NOT NULL,
    CHECK (record->>'name' = name AND record->>'state' = state)
);

CREATE FUNCTION jobgate_vms_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.state <> 'destroyed' THEN
            RAISE EXCEPTION 'VM % is %: only destroyed VMs are forgotten', OLD.name, OLD.state USING ERRCODE = 'JG006';
        END IF;
        RETURN OLD;
    END IF;
    IF jobgate_vm_rank(NEW.state) < jobgate_vm_rank(OLD.state) THEN
        RAISE EXCEPTION 'VM % is %, not %', OLD.name, OLD.state, NEW.state USING ERRCODE = 'JG001';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER vms_guard BEFORE UPDATE OR DELETE ON vms FOR EACH ROW EXECUTE FUNCTION jobgate_vms_guard();

CREATE FUNCTION jobgate_job_rank(s text) RETURNS int LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE s WHEN 'queued' THEN 0 WHEN 'abandoned' THEN 1 WHEN 'in_progress' THEN 2 WHEN 'completed' THEN 3 END
$$;

CREATE TABLE jobs (
    id         bigint PRIMARY KEY,
    state      text COLLATE "C" NOT NULL CHECK (state IN ('queued', 'abandoned', 'in_progress', 'completed')),
    updated_at timestamptz NOT NULL,
    record     jsonb NOT NULL,
    CHECK ((record->>'id')::bigint = id AND record->>'state' = state)
);

CREATE FUNCTION jobgate_jobs_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.state <> 'completed' THEN
            RAISE EXCEPTION 'job % is %: only completed jobs are forgotten', OLD.id, OLD.state USING ERRCODE = 'JG006';
        END IF;
        RETURN OLD;
    END IF;
    IF jobgate_job_rank(NEW.state) < jobgate_job_rank(OLD.state) THEN
        RAISE EXCEPTION 'job % is %, not %', OLD.id, OLD.state, NEW.state USING ERRCODE = 'JG001';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER jobs_guard BEFORE UPDATE OR DELETE ON jobs FOR EACH ROW EXECUTE FUNCTION jobgate_jobs_guard();

-- Webhook delivery ids: new once.
CREATE TABLE deliveries (
    id      text COLLATE "C" PRIMARY KEY,
    seen_at timestamptz NOT NULL
);
CREATE INDEX deliveries_seen ON deliveries (seen_at);

-- Leases: one holder until expiry. Taking one is a single conditional
-- upsert (store_postgres.go), decided under the row's lock.
CREATE TABLE leases (
    name   text COLLATE "C" PRIMARY KEY,
    holder text COLLATE "C" NOT NULL CHECK (holder <> ''),
    until  timestamptz NOT NULL
);
