//! Fixed RSA and P-256 test keys (made with openssl for these tests only; never deployed):
//! generating an RSA key in a debug-build test would take seconds.

/// RSA-2048 public key, SPKI PEM.
pub const RSA_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAo7SBkiivVnF/7LK2IBUj
SSr13g7magopuzBZ8YXLZ0PPAs4n/Z8vcvyBVrUBmf8WpkchbSTPseWpZJVLdFc3
PEWmivz8yEtB75aX09B3jazri3j8IxfKqj6STgKmmvYMvRoCF3irwh7ZP+JXEiXX
sVyRRJ02qu5AE9fzrj602UZHRvmCrI9yMIL0BbA/yrVPiaSh4jAwIyKgttSoVuyt
wnYaHLe9qvwNAdFAKwa5BvhOAoN2bvz+xWQFrSRRb1EeibW8q4igRVNxEBB8Elzd
rOLbwiFPUdPXjNaXKUA1+/5z2tZvn9ySGTPM4kBvqstZDXcHk4984Uqqy1nUNcyU
LQIDAQAB
-----END PUBLIC KEY-----\n";
/// Its private half, PKCS#1 DER, standard base64 (what jsonwebtoken's RSA signer takes).
pub const RSA_PRIVATE_PKCS1_B64: &str = concat!(
    "MIIEpAIBAAKCAQEAo7SBkiivVnF/7LK2IBUjSSr13g7magopuzBZ8YXLZ0PPAs4n/Z8vcvyBVrUBmf8WpkchbSTPse",
    "WpZJVLdFc3PEWmivz8yEtB75aX09B3jazri3j8IxfKqj6STgKmmvYMvRoCF3irwh7ZP+JXEiXXsVyRRJ02qu5AE9fz",
    "rj602UZHRvmCrI9yMIL0BbA/yrVPiaSh4jAwIyKgttSoVuytwnYaHLe9qvwNAdFAKwa5BvhOAoN2bvz+xWQFrSRRb1",
    "EeibW8q4igRVNxEBB8ElzdrOLbwiFPUdPXjNaXKUA1+/5z2tZvn9ySGTPM4kBvqstZDXcHk4984Uqqy1nUNcyULQID",
    "AQABAoIBAAfL3GIRIqnHtBuAkFibTefZmxK1NXQZe07ODCTxP23+n/pNEw3KwFgy0XF6cD+jOYyRaMFf3/qKMQsyBA",
    "FGRQ8108TQExuleX5D6jbdEwO4V3hrOnpsxkr3Oc44ZWX0YvtsV9F1cc9uWvmmP/AEkg7nlTofqmwxQ0Derd0flEsG",
    "1w7AC2Uc125m0pLsiupHwsQDzzt1dL2tZW5vtc9xKELEjqm2WbOeANDrMtKfmwAHwu9+nqzL8Dop7f9dk3umGEEV0h",
    "NETgx/wV+21RAWDQ/2SuF85K7F+Xgn8U+5BJFniEIHo7qHSfTftzSqPuMct28p9qrtnjwJhH3RekiYsgECgYEAzj3U",
    "2IU4UHEGckSdQcN+ufe/h0c4826QRcSokI4Dvc9oAwDgXlwMxpx+hwkNL3VxuihebfC9UioH9P55vXwN+wxnmU8TAO",
    "eBOxii7IObvrrD7hINJ4tDkcSjZgNJchbRYSiqpz8dYQxjCC2GWQhQReLGj2+R/4jHXeU4fmr3Oi0CgYEAyzN7eNeP",
    "QVbGHEYgm9KOw/JUQUbZnHQ5H7QfvrKMrgbtYLRjFfe//9oO8ytD8vRRsGc1R6oXjC8L0aZGDIgM3oDSZ4enQ7UoJH",
    "MGZYZBgBcnJcaBYp29uJand7rxzsxPtaJHl11g4YRt2C72d9ESkF6QUIAgJ6AH7h/x/g+FAgECgYEAvrFE//4Nl7Mp",
    "trXigU/0+JYuLTKZYdu04g13nlDw/KutDDnfOt/5oBpKkyi3XE5HHUz+IsEZC8N5H/m7LoxpkNpjX8lRVOC5CJ865V",
    "y6wJuHVbSzHQETNNCQFF6tpiOa7S7gu0sMKxN87a7KLcAWGMgZt739TDx3ukWa+qiEdvECgYEAmNONh6NIAPJMabNs",
    "jwVbjo/RQo8Q15Sp6ehE/9215KUdH2BMLZd59emA2O6vWijaz3uwHMgWkb5Ie1M81+vzEd19YZQq/sde+5rvMqg41y",
    "eSr9yOLydIK25TYb9eYhRT1t3ITlVSqgo5uyAHCrJZ7e7RR1o11NeNX1DzZgsyFAECgYBoLzqdjYIQ8cBknCcWkP4q",
    "Or9DCsq/lrCwRdiW0JRVNxIeEGUUBJDoTqtFcb0LMDsItPpEJDtDhN5yNDvVEHxp5y5uL/7gU2pZjmsB3mQj678m3p",
    "Vra62sHCGsKGNHyx6hBD+GbY3MjrHwYlVNsx4EsBHSjg+ExSRdOkl+eCLj8w==",
);
/// P-256 public key, SPKI PEM.
pub const EC_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEgNXv2FE7GRuLA6zMFIekeYRCnLOG
CD1bOn452EjZi/RxYfQnCZuNlk8gKtRjbtS0rfa2zxI8dx2DDRBhG8DvKA==
-----END PUBLIC KEY-----\n";
/// Its private half, PKCS#8 DER, standard base64.
pub const EC_PRIVATE_PKCS8_B64: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgLi8lVbHYXNNSGlk5pzuulOb5HP0x1P/Ph23Uj5NtF56hRANCAASA1e/YUTsZG4sDrMwUh6R5hEKcs4YIPVs6fjnYSNmL9HFh9CcJm42WTyAq1GNu1LSt9rbPEjx3HYMNEGEbwO8o";
