-- The accounts of one bank. Balances are exact (numeric) and never
-- negative; "abnormal" is the switch that makes TransIn refuse an account.
CREATE TABLE IF NOT EXISTS accounts (
    user_id  bigint        PRIMARY KEY,
    balance  numeric(12,2) NOT NULL CHECK (balance >= 0),
    abnormal boolean       NOT NULL DEFAULT false,
    created  timestamptz   NOT NULL DEFAULT now(),
    updated  timestamptz   NOT NULL DEFAULT now()
);
