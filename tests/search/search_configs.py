"""Small search configurations shared by the search tests (imported as ``from search_configs import tiny``:
pytest's default import mode puts a test module's folder on ``sys.path``)."""
from search.config import SearchConfig
from search.presets import preset


def tiny(tmp_path, name: str, **overrides) -> SearchConfig:
    """The ``tiny`` preset writing into ``tmp_path/name``, quiet (no progress bar, TensorBoard or plots)."""
    values = dict(preset('tiny'), out=str(tmp_path), name=name, progress=False, tensorboard=False, plots=False,
                  preset='tiny')
    values.update(overrides)
    return SearchConfig(**values)
