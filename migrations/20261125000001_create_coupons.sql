-- Coupons and their issues. MySQL is the source of truth and the last line of
-- defence (guarantee 4): even if Redis forgets everything, these constraints keep
-- a coupon from being issued past its quantity or twice to one user.
-- Valid on MySQL 8.0.16+ (CHECK enforced) and MariaDB 10.6+.

CREATE TABLE IF NOT EXISTS coupons (
    id              BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name            VARCHAR(200) NOT NULL,
    total_quantity  BIGINT       NOT NULL,
    -- Rows in coupon_issues for this coupon, raised in the same transaction as
    -- the insert, so it never drifts from them.
    issued_quantity BIGINT       NOT NULL DEFAULT 0,
    -- UTC, millisecond precision.
    issue_start     DATETIME(3)  NOT NULL,
    issue_end       DATETIME(3)  NOT NULL,
    created_at      DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    CONSTRAINT coupons_total_positive CHECK (total_quantity >= 1),
    CONSTRAINT coupons_quantity_guard CHECK (issued_quantity >= 0 AND issued_quantity <= total_quantity),
    CONSTRAINT coupons_period CHECK (issue_start < issue_end)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE IF NOT EXISTS coupon_issues (
    id          BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    coupon_id   BIGINT      NOT NULL,
    user_id     BIGINT      NOT NULL,
    -- The user's place among the accepted, as the API answered it.
    position    BIGINT      NOT NULL,
    -- When the API accepted the request (UTC) ...
    accepted_at DATETIME(3) NOT NULL,
    -- ... and when the consumer wrote this row (UTC).
    issued_at   DATETIME(3) NOT NULL,
    -- Idempotency: a redelivered event hits this key and inserts nothing.
    CONSTRAINT coupon_issues_coupon_user UNIQUE (coupon_id, user_id),
    CONSTRAINT coupon_issues_coupon FOREIGN KEY (coupon_id) REFERENCES coupons (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
