"""Training of segcodec models.  Never imported by the coding path (encode/segment/serve)."""
