"""Operations: replay in a sandbox, policy what-if, evals, cost per outcome; built on recorded events."""

__all__: list[str] = []
