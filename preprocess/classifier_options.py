"""The attribute classifier's choices without torch: the architecture names and the options'
allowed values. `preprocess.classifier` builds its networks from these, and the training script
(`preprocess/encoder_train.py`) parses and checks its flags with them before it imports torch.
"""

# torchvision ResNets the trunk can be; "<arch>_3stage" is the same trunk without its last stage.
BASE_ARCHITECTURES = ("resnet18", "resnet34", "resnet50")
THREE_STAGE_SUFFIX = "_3stage"
ARCHITECTURE_NAMES = BASE_ARCHITECTURES + tuple(name + THREE_STAGE_SUFFIX for name in BASE_ARCHITECTURES)
INPUT_NORMALIZATIONS = ("imagenet", "none")
FEATURE_ACTIVATIONS = ("gelu", "none")
