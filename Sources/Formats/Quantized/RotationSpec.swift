import Foundation

/// What a rotated checkpoint records about its online transforms (`rqat_rotation` in its
/// quantization_config): the method, whether down_proj's input is rotated at run time and
/// whether queries and keys are, per head, after RoPE.
package struct RotationSpec: QuantizationConfigRecord, Equatable, Sendable {
    package var method: String
    package var seed: UInt64
    package var onlineDownHadamard: Bool
    /// Whether queries and keys are rotated per head after RoPE (absent in older checkpoints: no).
    package var onlineQKHadamardRecord: Bool?
    package var onlineQKHadamard: Bool { onlineQKHadamardRecord ?? false }

    package init(method: String, seed: UInt64, onlineDownHadamard: Bool, onlineQKHadamard: Bool = false) {
        self.method = method
        self.seed = seed
        self.onlineDownHadamard = onlineDownHadamard
        onlineQKHadamardRecord = onlineQKHadamard
    }

    enum CodingKeys: String, CodingKey {
        case method, seed
        case onlineDownHadamard = "online_down_hadamard"
        case onlineQKHadamardRecord = "online_qk_hadamard"
    }

    package static let configKey = "rqat_rotation"
    package static let validForm = "a valid rotation record"
}
