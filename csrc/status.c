#include "evograd/evograd.h"

const char *evograd_status_string(evograd_status status) {
  switch (status) {
    case EVOGRAD_OK: return "ok";
    case EVOGRAD_ERR_NULL_POINTER: return "a required pointer is NULL";
    case EVOGRAD_ERR_INVALID_COUNT: return "a count is zero, negative or too large";
    case EVOGRAD_ERR_INVALID_SIGMA: return "sigma must be finite and > 0";
    case EVOGRAD_ERR_INVALID_TEMPERATURE: return "temperature must be finite and > 0";
    case EVOGRAD_ERR_INVALID_POPULATION: return "population must be >= 1 and < 2^32";
    case EVOGRAD_ERR_ODD_ANTITHETIC: return "antithetic noise needs an even population";
    case EVOGRAD_ERR_NONFINITE_LOSS: return "a candidate loss is NaN or infinite";
    case EVOGRAD_ERR_INVALID_NOISE: return "unknown noise kind";
    case EVOGRAD_ERR_INVALID_RANGE: return "element range outside the list or not block-aligned";
    case EVOGRAD_ERR_SIZE_OVERFLOW: return "sizes overflow 64-bit indexing";
    case EVOGRAD_ERR_INVALID_DTYPE: return "unsupported dtype";
    case EVOGRAD_ERR_INVALID_CANDIDATE: return "candidate index must be in [0, 2^32)";
    case EVOGRAD_ERR_NONFINITE_VALUE: return "a weight or projection is NaN or infinite";
    case EVOGRAD_ERR_NO_DEVICE: return "no usable CUDA device";
    case EVOGRAD_ERR_DEVICE: return "a CUDA call failed";
    case EVOGRAD_ERR_OVERLAP: return "output spans overlap each other or their inputs";
  }
  return "unknown status code";
}
