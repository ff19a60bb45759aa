"""Settings: the environment read in one place, an empty variable counting as unset."""

from pathlib import Path

from collab_core.settings import ML100K_URL, REPO, VARIABLES, Settings


def test_defaults_when_nothing_is_set():
    s = Settings.from_env({"HOME": "/home/ana"})
    assert s == Settings(
        data_dir=None,
        models_dir=REPO / "models",
        cache_dir=Path("/home/ana/.cache/collab-explorer"),
        ml100k_url=ML100K_URL,
        allow_paths=True,
    )


def test_every_variable_is_read():
    env = {
        "COLLAB_DATA_DIR": "/data/ml-100k",
        "COLLAB_MODELS_DIR": "/srv/models",
        "XDG_CACHE_HOME": "/var/cache",
        "COLLAB_ML100K_URL": "http://mirror/ml-100k.zip",
        "COLLAB_ALLOW_PATHS": "0",
    }
    assert Settings.from_env(env) == Settings(
        data_dir=Path("/data/ml-100k"),
        models_dir=Path("/srv/models"),
        cache_dir=Path("/var/cache/collab-explorer"),
        ml100k_url="http://mirror/ml-100k.zip",
        allow_paths=False,
    )


def test_an_empty_variable_is_unset():
    empty = {name: "" for name in VARIABLES} | {"HOME": "/home/ana"}
    assert Settings.from_env(empty) == Settings.from_env({"HOME": "/home/ana"})
    assert Settings.from_env({"COLLAB_ALLOW_PATHS": "1"}).allow_paths
