"""The Streamlit side of Collab Explorer: caching, the training job registry, shared widgets, charts."""
