"""The Streamlit side of Collab Explorer: the session (sidebar, active model), typed cached calls,
drawing helpers, charts, the training job registry.

One BLAS thread per call in the server. The server is one process of many threads: training jobs,
sessions' scripts, the web loop. NumPy's and SciPy's OpenBLAS each keep their own pool of spinning
worker threads, and calls from two threads at once on 2 cores starve each other: the live map's
1000 x 50 SVD in a training job (1 ms alone) took seconds while a session drew its loss chart,
and the app's fit of the default model ran at 10-18x the CLI's. OPENBLAS_NUM_THREADS covers the
libraries loaded later (SciPy's); threadpoolctl the ones already loaded (NumPy's). PyTorch's own
BLAS and thread pool are not touched: the training steps set their threads themselves.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from threadpoolctl import threadpool_limits

threadpool_limits(limits=1, user_api="blas")
