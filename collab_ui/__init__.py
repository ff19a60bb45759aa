"""The Streamlit side of Collab Explorer: the session (sidebar, active model), typed cached calls,
drawing helpers, charts, the training job registry."""
