import Tensors

/// A mean with a 95% interval, as accuracy tables report it.
package struct Interval: Codable, Sendable, Equatable {
    package var mean: Double
    package var low: Double
    package var high: Double

    package init(mean: Double, low: Double, high: Double) {
        self.mean = mean
        self.low = low
        self.high = high
    }

    /// Whether the interval lies entirely above (or below) zero: a difference it describes is
    /// then significant at the 5% level.
    package var excludesZero: Bool { low > 0 || high < 0 }
}

/// Percentile bootstrap over problems, seeded so a report is reproducible.
///
/// Problems are the unit of resampling: a problem answered under several seeds contributes its
/// mean correctness, so the interval reflects how many problems were asked, not how many
/// samples were drawn of each (those are correlated).
package enum Bootstrap {
    package static let defaultResamples = 2000

    /// Mean of `values` with the 2.5th and 97.5th percentiles of the resampled means.
    package static func mean(_ values: [Double], resamples: Int = defaultResamples, seed: UInt64 = 0) -> Interval {
        guard !values.isEmpty else { return Interval(mean: .nan, low: .nan, high: .nan) }
        let mean = values.reduce(0, +) / Double(values.count)
        guard values.count > 1 else { return Interval(mean: mean, low: mean, high: mean) }
        var rng = SeededRNG(seed: seed)
        var means: [Double] = []
        means.reserveCapacity(resamples)
        let n = values.count
        for _ in 0..<resamples {
            var sum = 0.0
            for _ in 0..<n { sum += values[Int(rng.next() % UInt64(n))] }
            means.append(sum / Double(n))
        }
        means.sort()
        return Interval(mean: mean, low: percentile(means, 0.025), high: percentile(means, 0.975))
    }

    /// The paired difference a - b over the same problems (`a[i]` and `b[i]` are one problem's
    /// scores under two models): "a beats b" when the interval excludes zero and is positive.
    package static func pairedDifference(_ a: [Double], _ b: [Double], resamples: Int = defaultResamples,
                                         seed: UInt64 = 0) -> Interval {
        precondition(a.count == b.count, "paired bootstrap needs the same problems on both sides")
        return mean(zip(a, b).map { $0 - $1 }, resamples: resamples, seed: seed)
    }

    /// Linear interpolation between order statistics (numpy's default).
    package static func percentile(_ sorted: [Double], _ q: Double) -> Double {
        let position = q * Double(sorted.count - 1)
        let lo = Int(position.rounded(.down)), hi = min(lo + 1, sorted.count - 1)
        let t = position - Double(lo)
        return sorted[lo] * (1 - t) + sorted[hi] * t
    }
}
