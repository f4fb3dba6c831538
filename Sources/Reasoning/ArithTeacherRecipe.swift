import Foundation

/// How the embedded default trains its `arith` teacher from scratch: the task levels it trains
/// and is scored on, the model `rqat init` writes, and the `rqat sft` settings. The values of
/// `embedded` are the ones measured in docs/ACCURACY.md ("The embedded teacher: what was
/// tried"); the pipeline reads them from here (or from a config that overrides them).
package struct ArithTeacherRecipe: Codable, Sendable, Equatable {
    /// The training curriculum: problems are drawn from these levels in turn.
    package var trainLevels: [ArithLevel]
    /// The level validation and test problems are drawn from.
    package var evalLevel: ArithLevel
    /// Distinct training problems (train split, seed `dataSeed`).
    package var trainProblems: Int
    package var dataSeed: UInt64

    /// `rqat init` settings.
    package var arch: String
    package var hidden: Int
    package var layers: Int
    package var heads: Int
    package var kvHeads: Int
    package var intermediate: Int
    package var maxPositions: Int
    package var initSeed: UInt64

    /// `rqat sft` settings (plain format: prompt then completion then EOS).
    package var steps: Int
    package var batchTokens: Int
    package var seqLen: Int
    package var packing: Bool
    /// Train on the whole text (question included) rather than the completion only.
    package var fullTextLoss: Bool
    package var lr: Double
    package var warmup: Int
    package var minLRRatio: Double
    package var weightDecay: Double
    package var trainSeed: UInt64

    /// Greedy decoding needs no more than this for the eval level (4 steps of at most 7 tokens,
    /// the answer line and EOS).
    package var maxNewTokens: Int

    enum CodingKeys: String, CodingKey {
        case trainLevels = "train_levels", evalLevel = "eval_level", trainProblems = "train_problems", dataSeed = "data_seed"
        case arch, hidden, layers, heads, kvHeads = "kv_heads", intermediate, maxPositions = "max_positions", initSeed = "init_seed"
        case steps, batchTokens = "batch_tokens", seqLen = "seq_len", packing, fullTextLoss = "full_text_loss", lr, warmup
        case minLRRatio = "min_lr_ratio", weightDecay = "weight_decay", trainSeed = "train_seed", maxNewTokens = "max_new_tokens"
    }

    /// The task the teacher is trained on (its curriculum) and the one it is scored on.
    package var trainTask: ArithTask { ArithTask(levels: trainLevels) }
    package var evalTask: ArithTask { ArithTask(levels: [evalLevel]) }

    /// Tokens the training run reads (padding included), for budgeting.
    package var trainTokens: Int { steps * batchTokens }
}
