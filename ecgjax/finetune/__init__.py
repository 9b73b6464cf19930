"""Supervised fine-tuning: backbones + heads, multi-task losses, PCGrad, splits and the trainer.

  losses     BCE with pos_weight, focal, binary recall loss, softmax CE, MSE (per task)
  weighting  Kendall uncertainty weighting of task losses
  pcgrad     PCGrad, the paper's and AnyECG-CCTA's variants (engine gradient combiner)
  model      backbone (Net1D, ResNet, or an export's encoder) + task head
  objective  the "supervised" objective the training engine runs
  data       in-memory prepared records, label selection, positive weights
  splits     the data's folds or grouped stratified CV, each with a validation part
  evaluate   predictions over eval batches, validation metrics
  trainer    the epoch loop per split: best checkpoint on validation, test and external
             predictions, fold ensemble, report
"""
