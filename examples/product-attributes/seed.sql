-- The product service's tables before the migration, with generated rows (deterministic). The row count comes from
-- the setting tidemark.seed_rows (default 4000 variants), e.g.
--   PGOPTIONS='-c tidemark.seed_rows=4000' psql "$DATABASE_URL" -f examples/product-attributes/seed.sql
CREATE TEMP TABLE seed_params AS
  SELECT coalesce(nullif(current_setting('tidemark.seed_rows', true), ''), '4000')::int AS variants;

CREATE TABLE categories (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name text NOT NULL UNIQUE,
  description text,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE products (
  id bigserial PRIMARY KEY,
  category_id uuid NOT NULL REFERENCES categories (id),
  name text NOT NULL,
  brand text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE product_variants (
  id bigserial PRIMARY KEY,
  product_id bigint NOT NULL REFERENCES products (id),
  sku text NOT NULL UNIQUE,
  color text,
  size text,
  price_cents integer NOT NULL CHECK (price_cents > 0),
  stock integer NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX product_variants_product_idx ON product_variants (product_id);

INSERT INTO categories (id, name, description, created_at)
SELECT md5('category:' || c.name)::uuid, c.name, c.description, timestamptz '2024-01-01 00:00:00+00'
  FROM (VALUES ('Home & Kitchen', 'Cookware, storage and small appliances'),
               ('Books', 'Print and e-books'),
               ('Sports & Outdoors', 'Gear for the gym and the trail'),
               ('Toys & Games', 'For every age'),
               ('Garden', 'Tools, seeds and furniture'),
               ('Beauty', 'Skin care and cosmetics')) AS c (name, description);

-- Four variants per product, in a few colours and sizes.
INSERT INTO products (category_id, name, brand, created_at)
SELECT (SELECT id FROM categories ORDER BY name OFFSET g % 6 LIMIT 1),
       (ARRAY['Classic', 'Pro', 'Lite', 'Max', 'Eco', 'Mini'])[1 + g % 6] || ' ' ||
       (ARRAY['Kettle', 'Novel', 'Backpack', 'Puzzle', 'Trowel', 'Serum', 'Lamp', 'Bottle'])[1 + g % 8] || ' ' || g,
       (ARRAY['Acme', 'Northwind', 'Globex', 'Initech', 'Umbrella'])[1 + g % 5],
       timestamptz '2024-01-01 00:00:00+00' + g * interval '37 minutes'
  FROM generate_series(1, greatest(1, (SELECT variants FROM seed_params) / 4)) AS g;

INSERT INTO product_variants (product_id, sku, color, size, price_cents, stock, created_at)
SELECT 1 + (g - 1) / 4,
       'SKU-' || lpad(g::text, 7, '0'),
       (ARRAY['black', 'white', 'red', 'blue', NULL])[1 + g % 5],
       (ARRAY['S', 'M', 'L', 'XL'])[1 + g % 4],
       499 + (g * 7919) % 20000,
       (g * 31) % 250,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '9 minutes'
  FROM generate_series(1, greatest(1, (SELECT variants FROM seed_params) / 4) * 4) AS g;

ANALYZE categories;
ANALYZE products;
ANALYZE product_variants;
