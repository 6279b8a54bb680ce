"""The downstream task: RetinaNet builders, training, COCO evaluation, and the functional loss with the
second-order terms (Hessian-vector products, mixed image-parameter derivatives) the hypergradient needs."""
