//! Beta schedules and samplers, generic over `nn::Backend`: the scheduler coefficients are public scalars.
