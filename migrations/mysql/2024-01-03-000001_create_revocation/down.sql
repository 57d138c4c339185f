DROP TABLE revocation;
