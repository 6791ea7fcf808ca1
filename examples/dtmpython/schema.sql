-- The tutorial's bank and DTM's sub-transaction barrier, on PostgreSQL.
CREATE SCHEMA IF NOT EXISTS dtm_busi;
CREATE TABLE IF NOT EXISTS dtm_busi.user_account (
    user_id    integer PRIMARY KEY,
    balance    numeric(10, 2) NOT NULL DEFAULT 0 CHECK (balance >= 0),
    update_time timestamptz NOT NULL DEFAULT now()
);

-- DTM's barrier table (dtmcli's PostgreSQL schema).
CREATE SCHEMA IF NOT EXISTS dtm_barrier;
CREATE TABLE IF NOT EXISTS dtm_barrier.barrier (
    id          bigserial PRIMARY KEY,
    trans_type  varchar(45) DEFAULT '',
    gid         varchar(128) DEFAULT '',
    branch_id   varchar(128) DEFAULT '',
    op          varchar(45) DEFAULT '',
    barrier_id  varchar(45) DEFAULT '',
    reason      varchar(45) DEFAULT '',
    create_time timestamptz DEFAULT now(),
    update_time timestamptz DEFAULT now(),
    CONSTRAINT uniq_barrier UNIQUE (gid, branch_id, op, barrier_id)
);
