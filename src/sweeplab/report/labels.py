"""The words people read for the experiment's names: variants, axes and their values (`labels:` in an experiment
file), used by every table, figure, legend and sentence of the report.

A cell label `RNN_3layers,data.max_digits=9` reads `RNN, 3 layers, 9 digits` with
`labels: {RNN_3layers: "RNN, 3 layers", data.max_digits: {title: digits, value: "{} digits"}}`; without labels
it reads as the variant's name and `max_digits=9` (the key's last part).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Labels:
    variants: dict[str, str] = field(default_factory=dict)  # variant name -> its label (its name, without one)
    axes: dict[str, Any] = field(default_factory=dict)  # axis key -> experiment.AxisLabel
    values: dict[str, list[str]] = field(default_factory=dict)  # axis key -> its values, as labels write them

    def axis(self, key: str) -> str:
        label = self.axes.get(key)
        return label.title if label is not None and label.title else key.rsplit(".", 1)[-1]

    def value(self, key: str, value: str) -> str:
        """`9 digits`, or `max_digits=9` for an axis without a value label."""
        label = self.axes.get(key)
        if label is not None and isinstance(label.value, dict) and value in label.value:
            return label.value[value]
        if label is not None and isinstance(label.value, str) and label.value:
            return label.value.replace("{}", value)
        return f"{self.axis(key)}={value}"

    def bare_value(self, key: str, value: str) -> str:
        """A value under its axis's heading: `9 digits` when labelled, else `9`."""
        label = self.axes.get(key)
        return self.value(key, value) if label is not None and label.value else value

    def cell(self, label: str) -> str:
        parts = []
        for part in label.split(","):
            key, sep, value = part.partition("=")
            parts.append(self.value(key.strip(), value.strip()) if sep else self.variants.get(part, part))
        return ", ".join(parts)

    def text(self, text: str) -> str:
        """A sentence with every name in it as people read it (whole names only: `RNN` inside `RNN_3layers` stays);
        a cell label, names joined by commas, reads as `RNN, 3 layers, 9 digits`."""
        names = self._names()
        if not names:
            return text
        name = "(?:" + "|".join(map(re.escape, sorted(names, key=len, reverse=True))) + ")"
        pattern = re.compile(rf"(?<![\w.=-])({name}(?:,{name})*)(?![\w=-]|\.\w)")  # a full stop may follow
        return pattern.sub(lambda m: ", ".join(names[part] for part in m.group(1).split(",")), text)

    def _names(self) -> dict[str, str]:
        names = {name: label for name, label in self.variants.items()}
        for key, values in self.values.items():
            names.update({f"{key}={v}": self.value(key, v) for v in values})
            if "." in key:  # a dotted key is never an English word (a bare `data` may be one: left as it is)
                names[key] = self.axis(key)
        return names
