"""Config mistakes, from Python, --set strings or a hand-edited config.json, are one-line
ConfigErrors naming the field, the value and what was expected."""

import dataclasses
import json

import pytest

from vaezoo import zoo
from vaezoo.errors import ConfigError

BAD = [
    # (overrides, what the message must say)
    ({"latent_dim": 2.5}, r"latent_dim=2\.5 .*expected an integer"),
    ({"latent_dim": True}, r"latent_dim=True .*expected an integer"),
    ({"latent_dim": 0}, r"latent_dim=0; expected an integer from 1 to 65536"),
    ({"latent_dim": 10**20}, r"latent_dim=100000000000000000000; expected an integer from 1 to 65536"),
    ({"latent_dim": None}, r"latent_dim=None .*expected an integer"),
    ({"hidden": (-1,)}, r"hidden=\(-1,\); expected layer sizes from 1 to 65536"),
    ({"hidden": "-5,3"}, r"hidden=\(-5, 3\); expected layer sizes from 1 to 65536"),
    ({"decoder_channels": (2,)}, r"decoder_channels=\(2,\); expected two channel counts from 1 to 65536"),
    ({"decoder_channels": "0,32"}, r"decoder_channels=\(0, 32\); expected two channel counts from 1 to 65536"),
    ({"hidden": 200}, r"hidden=200 .*expected a list of integers"),
    ({"hidden": [200, 2.5]}, r"hidden=\[200, 2\.5\] .*expected a list of integers"),
    ({"hidden": "300,x"}, r"hidden='300,x' .*expected a list of integers"),
    ({"activation": "foo"}, r"activation='foo'; expected one of elu, relu, softplus, tanh"),
    ({"activation": 3}, r"activation=3 .*expected a string"),
    ({"num_particles": "three"}, r"num_particles='three' .*expected an integer"),
    ({"num_particles": 0}, r"num_particles=0; expected an integer from 1 to 65536"),
    ({"likelihood_scale": float("nan")}, r"likelihood_scale=nan .*expected a finite number"),
    ({"likelihood_scale": "inf"}, r"likelihood_scale='inf' .*expected a finite number"),
    ({"likelihood_scale": 0}, r"likelihood_scale=0\.0; expected a number > 0"),
    ({"likelihood_scale": False}, r"likelihood_scale=False .*expected a finite number"),
    ({"learn_scale": 1}, r"learn_scale=1 .*expected true or false"),
    ({"learn_scale": "maybe"}, r"learn_scale='maybe' .*expected true or false"),
    ({"binarize": 3}, r"binarize=3 .*expected a string, or None"),
    ({"binarize": "sometimes"}, r"binarize='sometimes'; expected dynamic, fixed or none"),
    ({"likelihood": "poisson"}, r"likelihood='poisson'; expected one of bernoulli, continuous-bernoulli, normal"),
    ({"net": "resnet"}, r"net='resnet'; expected mlp or conv"),
    ({"objective": "vi"}, r"objective='vi'; expected elbo or iwae"),
    ({"widht": 3}, r"'vae' has no config field 'widht'; expected one of: (\w+, )*activation, "),
]


# the entries with the vae family's fields (the spatial VAEs' config: test_spatial_vae.py)
@pytest.mark.parametrize("name", [n for n in zoo.names() if "latent_dim" in {f.name for f in dataclasses.fields(zoo.entry(n).config)}])
@pytest.mark.parametrize("overrides,message", BAD, ids=[next(iter(o)) + "=" + repr(next(iter(o.values()))) for o, _ in BAD])
def test_bad_value_is_one_line_config_error(name, overrides, message):
    field = next(iter(overrides))
    if field != "widht" and field not in {f.name for f in dataclasses.fields(zoo.entry(name).config)}:
        pytest.skip(f"{name!r} has no field {field!r}")
    with pytest.raises(ConfigError) as info:
        zoo.create(name, data_shape=(6,), **overrides)
    msg = str(info.value)
    assert "\n" not in msg
    assert info.match(message.replace("'vae'", repr(name)))


def test_values_are_converted_alike_from_python_set_strings_and_json():
    """A string for a non-string field is read as ``--set`` reads it; lists stand for tuples."""
    python = zoo.make_config("vae", {"latent_dim": 3, "hidden": (30, 10), "learn_scale": True, "binarize": None,
                                     "likelihood_scale": 1, "num_particles": 3})
    strings = zoo.make_config("vae", {"latent_dim": "3", "hidden": "30,10", "learn_scale": "true", "binarize": "none",
                                      "likelihood_scale": "1", "num_particles": "3"})
    from_json = zoo.make_config("vae", json.loads(json.dumps(zoo.config_dict(python))))
    assert python == strings == from_json
    assert python.hidden == (30, 10) and type(python.likelihood_scale) is float and python.binarize is None
    # a config round-trips through config.json
    iwae = zoo.make_config("iwae")
    assert zoo.make_config("iwae", json.loads(json.dumps(zoo.config_dict(iwae)))) == iwae


def test_register_refuses_config_fields_make_config_cannot_check():
    from dataclasses import dataclass, field
    from typing import Dict

    @dataclass
    class Odd:
        table: Dict[str, int] = field(default_factory=dict)

    with pytest.raises(TypeError, match="table"):
        zoo.register("odd-test-entry", Odd, "never registered")
    assert "odd-test-entry" not in zoo.names()
