-- The seed's table, exactly (init.sql of the tutorial). IF NOT EXISTS: an existing seed database
-- is adopted as-is, its rows kept.
CREATE TABLE IF NOT EXISTS `user` (
  id INT AUTO_INCREMENT PRIMARY KEY,
  email VARCHAR(255) NOT NULL UNIQUE,
  password VARCHAR(255) NOT NULL
);
