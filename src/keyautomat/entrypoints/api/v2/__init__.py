"""The LivionKey API V2 routers."""
