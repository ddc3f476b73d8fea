"""The building blocks the kernel variants share.

``gemm``       BLAS ``gemm`` callable from compiled code (MKL, numpy's OpenBLAS or scipy's BLAS)
``simd``       a 512-bit vector type and the intrinsics a micro-kernel needs
``rowpass``    the serial pass between the two matmuls (ReLU, output layer, loss, dz1, sums)
``losses``     squared error and softmax cross-entropy, one row at a time
``updates``    the fused optimiser update (SGD, momentum, Nesterov, Adam, L2)
``minibatch``  which rows a step uses (blocks of an epoch, shuffled or in place)
``loops``      the whole-loop training loops, written once for every compiled step
"""
