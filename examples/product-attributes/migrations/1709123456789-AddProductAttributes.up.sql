-- Free-form attributes per variant (material, voltage, …). A constant default is stored once in the catalog, so the
-- column is added without rewriting the table.
ALTER TABLE product_variants
  ADD COLUMN attributes jsonb NOT NULL DEFAULT '{}';
