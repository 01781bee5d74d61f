DELETE FROM categories
WHERE name IN ('Electronics', 'Clothing');
