import Foundation

/// What GRPO divides centred rewards by (`--scale-rewards`).
package enum RewardScaling: String, Codable, Sendable, CaseIterable {
    /// By the standard deviation of the completion's own group (GRPO).
    case group
    /// By the standard deviation over the whole batch.
    case batch
    /// Not at all (Dr. GRPO, with `--loss-agg dr-grpo`): a group's advantages are its rewards
    /// minus their mean, so easy and hard prompts are not reweighted by their spread.
    case none
}

/// Group-relative advantages: each completion's reward minus the mean of its group (the G
/// completions of one prompt), scaled as `RewardScaling` says. Standard deviations are the
/// unbiased ones (n - 1), as torch.std and TRL take them, plus `epsilon`.
package enum Advantages {
    package static let epsilon = 1e-4

    /// rewards: groups of `groupSize`, one after another. A group whose rewards are all equal
    /// has advantages 0 and adds no gradient: `zeroGroups` counts them.
    package static func compute(rewards: [Double], groupSize g: Int, scaling: RewardScaling)
        -> (advantages: [Double], zeroGroups: Int) {
        precondition(g >= 2 && rewards.count % g == 0, "rewards come in groups of at least 2")
        var advantages = [Double](repeating: 0, count: rewards.count)
        var zeroGroups = 0
        let batchStd = standardDeviation(rewards[...])
        for start in stride(from: 0, to: rewards.count, by: g) {
            let group = rewards[start..<start + g]
            let mean = group.reduce(0, +) / Double(g)
            if group.allSatisfy({ $0 == group.first! }) { zeroGroups += 1 }
            let scale: Double
            switch scaling {
            case .group: scale = standardDeviation(group) + epsilon
            case .batch: scale = batchStd + epsilon
            case .none: scale = 1
            }
            for i in group.indices { advantages[i] = (rewards[i] - mean) / scale }
        }
        return (advantages, zeroGroups)
    }

    static func standardDeviation(_ x: ArraySlice<Double>) -> Double {
        guard x.count > 1 else { return 0 }
        let mean = x.reduce(0, +) / Double(x.count)
        let squares = x.reduce(0) { $0 + ($1 - mean) * ($1 - mean) }
        return (squares / Double(x.count - 1)).squareRoot()
    }
}
