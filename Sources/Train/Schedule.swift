import Foundation

/// The learning rate as a function of the optimizer step.
///
/// Steps are counted from 0: `lr(step: s)` is the rate for the (s+1)-th update.
/// - Warmup is linear and reaches the peak at its last step: `peak * (s + 1) / warmupSteps` for
///   `s < warmupSteps` (so the first update is not wasted at rate 0, as Hugging Face's
///   `s / warmupSteps` would).
/// - `constant`: the peak after warmup.
/// - `cosine`: with `progress = (s - warmupSteps) / (totalSteps - warmupSteps)` clamped to [0, 1],
///   `peak * (r + (1 - r) * (1 + cos(pi * progress)) / 2)` for `r = minLRRatio`: the peak right
///   after warmup, falling to `peak * r` at `totalSteps` and staying there (the formula of
///   transformers' `get_cosine_with_min_lr_schedule_with_warmup`).
package struct LRSchedule: Codable, Equatable, Sendable {
    package enum Kind: String, Codable, Sendable { case constant, cosine }

    package var kind: Kind
    package var peakLR: Double
    package var warmupSteps: Int
    /// Length of the run; only the cosine shape uses it.
    package var totalSteps: Int
    /// The floor of the cosine decay as a fraction of the peak.
    package var minLRRatio: Double

    package static func constant(_ lr: Double, warmupSteps: Int = 0) -> LRSchedule {
        LRSchedule(kind: .constant, peakLR: lr, warmupSteps: warmupSteps, totalSteps: 0, minLRRatio: 1)
    }

    package static func cosine(peak: Double, warmupSteps: Int, totalSteps: Int, minLRRatio: Double = 0.1) -> LRSchedule {
        LRSchedule(kind: .cosine, peakLR: peak, warmupSteps: warmupSteps, totalSteps: totalSteps, minLRRatio: minLRRatio)
    }

    package func lr(step: Int) -> Double {
        if step < warmupSteps {
            return peakLR * Double(step + 1) / Double(warmupSteps)
        }
        switch kind {
        case .constant:
            return peakLR
        case .cosine:
            let span = max(1, totalSteps - warmupSteps)
            let progress = min(1, max(0, Double(step - warmupSteps) / Double(span)))
            let shape = 0.5 * (1 + cos(Double.pi * progress))
            return peakLR * (minLRRatio + (1 - minLRRatio) * shape)
        }
    }
}
