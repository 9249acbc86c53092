"""IMAGE_INDEX and ATTRIBUTE_INDEX at the top of optimization/attribute_editor.py decide what
`python main.py` edits when no flag says otherwise (the paper's README's way)."""
import torch

from optimization import attribute_editor as ae
from test_evaluation import tiny_classifier, tiny_unet


def test_module_constants_choose_the_image_and_the_attribute(tmp_path, monkeypatch):
    torch.manual_seed(0)
    assets = dict(smooth=tiny_unet(str(tmp_path)), classifier=tiny_classifier(str(tmp_path / "clf.pt"), 0))
    monkeypatch.setattr(ae, "IMAGE_INDEX", 5)
    monkeypatch.setattr(ae, "ATTRIBUTE_INDEX", 15)
    summaries = ae.main(["--model_path", assets["smooth"], "--attribute_cpk_path", assets["classifier"],
                         "--output_path", str(tmp_path / "out"), "--timestep_respacing", "4", "--device", "cpu",
                         "--no_progress"])
    assert [s["input"] for s in summaries] == ["00005"]
    flipped = [e["flipped"] for e in summaries[0]["edits"]]
    assert ["Smiling"] in flipped
    # A flag still wins over the constants.
    summaries = ae.main(["--model_path", assets["smooth"], "--attribute_cpk_path", assets["classifier"],
                         "--output_path", str(tmp_path / "out2"), "--timestep_respacing", "4", "--device", "cpu",
                         "--no_progress", "--image_index", "2", "--attribute_index", "9"])
    assert [s["input"] for s in summaries] == ["00002"] and ["Eyeglasses"] in [e["flipped"] for e in
                                                                               summaries[0]["edits"]]
