-- Databases of the example's participants: each bank owns its database.
-- Run once by the postgres image on an empty data directory.
CREATE DATABASE bank_a;
CREATE DATABASE bank_b;
