"""XGBoost: the Booster in XGBoost's own stable format (UBJSON by default, or JSON), never pickle.

A scikit-learn-style wrapper (``XGBClassifier``, ...) is stored as the same booster plus its
``get_params()`` as JSON; on load the class comes from a fixed list of XGBoost's wrappers and is
rebuilt with those parameters, then reads the booster with its own ``load_model``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import xgboost as xgb

from amber.artifact._reader import ArtifactReader
from amber.artifact._writer import ArtifactWriter
from amber.errors import FormatError
from amber.handlers._base import SavedPayload
from amber.handlers._common import (
    SizeBounds,
    decode_params,
    encode_params,
    import_trusted,
    installed,
    type_name,
)
from amber.handlers._xgb_check import check_model
from amber.security._policy import LoadPolicy

__all__ = ["HANDLER", "XGBoostHandler"]

_WRAPPERS = tuple(
    f"xgboost.sklearn.{n}"
    for n in ("XGBClassifier", "XGBRegressor", "XGBRanker", "XGBRFClassifier", "XGBRFRegressor")
)
_BOOSTER = "xgboost.core.Booster"
_ENTRY = {"ubj": "model/model.ubj", "json": "model/model.json"}


def _booster_raw(booster: xgb.Booster, fmt: str, meta: dict[str, Any] | None) -> bytearray:
    if meta is None:
        return booster.save_raw(raw_format=fmt)
    # What XGBModel.save_model does: the wrapper's type travels in a booster attribute.
    booster.set_attr(scikit_learn=json.dumps(meta))
    try:
        return booster.save_raw(raw_format=fmt)
    finally:
        booster.set_attr(scikit_learn=None)


class XGBoostHandler:
    name = "xgboost"
    module_roots: tuple[str, ...] = ("xgboost",)
    formats: tuple[str, ...] = ("ubj", "json")

    def matches(self, obj: Any) -> bool:
        return isinstance(obj, (xgb.Booster, xgb.XGBModel)) and type_name(obj) in (
            _BOOSTER,
            *_WRAPPERS,
        )

    def save(self, obj: Any, writer: ArtifactWriter, *, format: str = "ubj") -> SavedPayload:
        cls = type_name(obj)
        payload: dict[str, Any] = {"kind": "xgboost", "format": format, "entry": _ENTRY[format]}
        if isinstance(obj, xgb.XGBModel):
            params = encode_params(obj.get_params(), f"a {type(obj).__name__}")
            payload["wrapper"] = cls
            payload["params"] = params
            raw = _booster_raw(obj.get_booster(), format, {"_estimator_type": obj._get_type()})
        else:
            raw = _booster_raw(obj, format, None)
        bounds = SizeBounds.for_save()
        check_model(raw, format, bounds)  # what the load will check: the width, the depth, ...
        writer.add(_ENTRY[format], raw)
        return SavedPayload(
            payload=payload,
            framework="xgboost",
            object_type=cls,
            globals=(cls,),
            modules=("xgboost",),
            distributions=installed("xgboost", "xgboost-cpu"),
            over_bounds=tuple(bounds.found),
        )

    def load(self, reader: ArtifactReader, payload: dict[str, Any], *, policy: LoadPolicy) -> Any:
        fmt = payload.get("format")
        if fmt not in _ENTRY or payload.get("entry") != _ENTRY[fmt]:
            raise FormatError(f"malformed xgboost payload: format {fmt!r}")
        raw = bytearray(reader.read(_ENTRY[fmt]))
        bounds = SizeBounds.for_load(str(reader.path), policy)
        check_model(raw, fmt, bounds)  # XGBoost's parser trusts what it reads
        bounds.warn_if_lifted()
        wrapper = payload.get("wrapper")
        if wrapper is None:
            booster = xgb.Booster()
            booster.load_model(raw)
            return booster
        cls = import_trusted(str(wrapper), _WRAPPERS, policy, source=str(reader.path))
        model = cls(**decode_params(payload.get("params")))
        model.load_model(raw)
        return model

    def probe_methods(self, model: Any) -> dict[str, Any]:
        if isinstance(model, xgb.Booster):
            return {"predict": lambda x: self.predict(model, x)}
        methods = {"predict": model.predict}
        if hasattr(model, "predict_proba"):
            methods["predict_proba"] = model.predict_proba
        return methods

    def predict(self, model: Any, inputs: Any) -> Any:
        if isinstance(model, xgb.Booster):
            # categorical columns of a DataFrame need enable_categorical (arrays ignore it)
            data = (
                inputs
                if isinstance(inputs, xgb.DMatrix)
                else xgb.DMatrix(inputs, enable_categorical=True)
            )
            return np.asarray(model.predict(data))
        return np.asarray(model.predict(inputs))


HANDLER = XGBoostHandler()
