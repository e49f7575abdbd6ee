-- The product catalog. Column names match the original prototype (shared/seeds/003).
-- last_updated is maintained by the database on insert and update, with microsecond precision,
-- so every change gets a fresh stamp that incremental capture can key on.
CREATE TABLE IF NOT EXISTS product (
    id           INT            NOT NULL PRIMARY KEY,
    name         VARCHAR(255)   NOT NULL,
    category     VARCHAR(255)   NULL,
    price        DECIMAL(10, 2) NOT NULL,
    last_updated TIMESTAMP(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    INDEX idx_product_last_updated_id (last_updated, id)
);
