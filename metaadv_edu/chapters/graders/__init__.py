"""Exercise graders of the chapters whose course module would otherwise outgrow one concept; each chapter
module re-exports its graders, so ``chapter.check_*`` and the autograder see no difference."""
