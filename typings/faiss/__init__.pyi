# faiss ships SWIG bindings without type information: its Python-side wrappers (numpy
# arguments, SearchParameters keywords) differ from the signatures the checker infers
# from the generated module. This stub makes every faiss name Any for pyright.
from typing import Any

def __getattr__(name: str) -> Any: ...
