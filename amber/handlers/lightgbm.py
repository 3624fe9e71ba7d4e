"""LightGBM: the Booster as LightGBM's own model text (``model_to_string``), never pickle.

A scikit-learn-style wrapper (``LGBMClassifier``, ...) is stored as the same text plus its
``get_params()`` as JSON and the few fitted attributes the text lacks (the classes, whether it was
fitted with feature names). On load the class comes from a fixed list of LightGBM's wrappers.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np

from amber.artifact._reader import ArtifactReader
from amber.artifact._writer import ArtifactWriter
from amber.errors import FormatError
from amber.handlers._base import SavedPayload
from amber.handlers._common import (
    SizeBounds,
    decode_params,
    encode_params,
    import_trusted,
    type_name,
)
from amber.handlers._lgb_check import check_model_text, check_threads
from amber.security._policy import LoadPolicy

__all__ = ["HANDLER", "LightGBMHandler"]

_WRAPPERS = tuple(
    f"lightgbm.sklearn.{n}" for n in ("LGBMClassifier", "LGBMRegressor", "LGBMRanker", "LGBMModel")
)
_BOOSTER = "lightgbm.basic.Booster"
_TEXT = "model/model.txt"
_CLASSES = "model/classes.npy"


class LightGBMHandler:
    name = "lightgbm"
    module_roots: tuple[str, ...] = ("lightgbm",)
    formats: tuple[str, ...] = ("text",)

    def matches(self, obj: Any) -> bool:
        return type_name(obj) in (_BOOSTER, *_WRAPPERS)

    def save(self, obj: Any, writer: ArtifactWriter, *, format: str = "text") -> SavedPayload:
        cls = type_name(obj)
        payload: dict[str, Any] = {"kind": "lightgbm", "format": "text", "entry": _TEXT}
        if isinstance(obj, lgb.LGBMModel):
            if not getattr(obj, "fitted_", False):
                raise ValueError(f"cannot save an unfitted {type(obj).__name__}; fit it first")
            params = encode_params(obj.get_params(), f"a {type(obj).__name__}")
            objective = obj._objective
            if objective is not None and not isinstance(objective, str):
                raise TypeError(
                    f"cannot save a {type(obj).__name__} trained with a Python objective "
                    f"function ({objective!r:.60}): Amber stores no code"
                )
            payload["wrapper"] = cls
            payload["params"] = params
            payload["fitted"] = {
                "objective": objective,
                "fitted_with_feature_names": bool(obj._fitted_with_feature_names),
                "n_features_in": int(obj._n_features_in),
            }
            booster = obj.booster_
            if isinstance(obj, lgb.LGBMClassifier):
                writer.add_array(_CLASSES, np.asarray(obj.classes_))
                payload["classes"] = _CLASSES
        else:
            booster = obj
        # the text keeps the trees up to the best iteration but not the number itself
        payload["best_iteration"] = int(booster.best_iteration)
        if isinstance(obj, lgb.LGBMModel):
            payload["best_score"] = {
                data: {metric: float(v) for metric, v in scores.items()}
                for data, scores in (obj.best_score_ or {}).items()
            }
        text = booster.model_to_string().encode("utf-8")
        bounds = SizeBounds.for_save()
        check_model_text(text, bounds)  # what the load will check: a tree too deep, ...
        writer.add(_TEXT, text)
        return SavedPayload(
            payload=payload,
            framework="lightgbm",
            object_type=cls,
            globals=(cls,),
            modules=("lightgbm",),
            over_bounds=tuple(bounds.found),
        )

    def load(self, reader: ArtifactReader, payload: dict[str, Any], *, policy: LoadPolicy) -> Any:
        if payload.get("entry") != _TEXT:
            raise FormatError(f"malformed lightgbm payload: entry {payload.get('entry')!r}")
        raw = bytes(reader.read(_TEXT))
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(f"the LightGBM model text is not UTF-8: {exc}") from exc
        bounds = SizeBounds.for_load(str(reader.path), policy)
        check_model_text(raw, bounds)  # LightGBM's parser trusts the indices and sizes it reads
        bounds.warn_if_lifted()
        booster = lgb.Booster(model_str=text)
        best = payload.get("best_iteration")
        if best is not None:
            if type(best) is not int or not -1 <= best <= booster.current_iteration():
                raise FormatError(f"malformed lightgbm payload: best_iteration {best!r:.40}")
            booster.best_iteration = best
        wrapper = payload.get("wrapper")
        if wrapper is None:
            return booster
        cls = import_trusted(str(wrapper), _WRAPPERS, policy, source=str(reader.path))
        fitted = payload.get("fitted")
        if not isinstance(fitted, dict):
            raise FormatError("malformed lightgbm payload: no fitted attributes")
        params = decode_params(payload.get("params"))
        check_threads(params)
        model = cls(**params)
        # What LGBMModel.fit leaves behind, besides the booster.
        model._Booster = booster
        model._n_features = booster.num_feature()
        model._n_features_in = int(fitted["n_features_in"])
        model._objective = fitted["objective"]
        model._fitted_with_feature_names = bool(fitted["fitted_with_feature_names"])
        model._evals_result = {}
        model._best_iteration = booster.best_iteration
        model._best_score = _best_score(payload.get("best_score", {}))
        model.fitted_ = True
        if "classes" in payload:
            from lightgbm.compat import _LGBMLabelEncoder

            classes = reader.read_array(_CLASSES)
            if classes.ndim != 1 or not np.array_equal(np.unique(classes), classes):
                raise FormatError(
                    "malformed lightgbm payload: the classes are not distinct and sorted, as "
                    "fitting leaves them"
                )
            # the encoder fit() would give (its only state is classes_), without the 3 ms
            # that fit() and transform() spend validating what was just checked
            model._le = _LGBMLabelEncoder()
            model._le.classes_ = classes
            model._class_map = dict(zip(classes, np.arange(len(classes)), strict=True))
            model._classes = classes
            model._n_classes = len(classes)
        return model

    def probe_methods(self, model: Any) -> dict[str, Any]:
        methods = {"predict": lambda x: self.predict(model, x)}
        if hasattr(model, "predict_proba"):
            methods["predict_proba"] = model.predict_proba
        return methods

    def predict(self, model: Any, inputs: Any) -> Any:
        return np.asarray(model.predict(inputs))


HANDLER = LightGBMHandler()


def _best_score(value: Any) -> dict[str, dict[str, float]]:
    """The recorded ``best_score_``: {data set: {metric: value}}."""
    if not isinstance(value, dict) or not all(
        isinstance(scores, dict) and all(isinstance(v, (int, float)) for v in scores.values())
        for scores in value.values()
    ):
        raise FormatError(f"malformed lightgbm payload: best_score {value!r:.80}")
    return {str(d): {str(m): float(v) for m, v in s.items()} for d, s in value.items()}
