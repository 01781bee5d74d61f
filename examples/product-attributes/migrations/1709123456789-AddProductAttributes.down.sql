ALTER TABLE product_variants
  DROP COLUMN attributes;
