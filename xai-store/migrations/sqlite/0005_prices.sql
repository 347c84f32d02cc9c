-- Prices set through the admin API (they take precedence over the configuration file's [pricing]).
-- `price` is JSON: decimal credit strings per million tokens (input, output, cached_input, cache_write,
-- reasoning) and per unit (per_image, per_search).
CREATE TABLE IF NOT EXISTS xai_prices (
    model      TEXT   PRIMARY KEY,
    price      TEXT   NOT NULL,
    updated_at BIGINT NOT NULL
);
