import Foundation

/// What a rotated checkpoint records about its online transforms (`rqat_rotation` in its
/// quantization_config): the method and whether down_proj's input is rotated at run time.
package struct RotationSpec: QuantizationConfigRecord, Equatable, Sendable {
    package var method: String
    package var seed: UInt64
    package var onlineDownHadamard: Bool

    package init(method: String, seed: UInt64, onlineDownHadamard: Bool) {
        self.method = method
        self.seed = seed
        self.onlineDownHadamard = onlineDownHadamard
    }

    enum CodingKeys: String, CodingKey {
        case method, seed
        case onlineDownHadamard = "online_down_hadamard"
    }

    package static let configKey = "rqat_rotation"
    package static let validForm = "a valid rotation record"
}
