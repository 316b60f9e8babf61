"""Retrieval infrastructure: image/location encoders, GPS gallery, FAISS gallery stores."""
