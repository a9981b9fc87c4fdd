-- Reverses 20261201003000_page_token_key: the page-token key is gone, so
-- every outstanding page token is refused once the table is made again.
DROP TABLE platform.server_secrets;
