-- A sale can be paused (and resumed) by an operator: `PATCH /coupons/{id}`
-- with `paused`. Valid on MySQL 8 and MariaDB 10.6+.

ALTER TABLE coupons ADD COLUMN paused BOOLEAN NOT NULL DEFAULT FALSE;
