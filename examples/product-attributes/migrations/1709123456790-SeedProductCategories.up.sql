INSERT INTO categories (id, name, description)
VALUES
  (gen_random_uuid(), 'Electronics', 'Electronic devices and accessories'),
  (gen_random_uuid(), 'Clothing', 'Apparel and fashion items');
