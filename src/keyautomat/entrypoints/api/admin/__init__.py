"""The admin API outside ``/v2`` (gaps.md B8): what the vendor's web UI does. Signed like V2."""
