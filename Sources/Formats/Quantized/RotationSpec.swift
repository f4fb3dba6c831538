import Foundation

/// What a rotated checkpoint records about its online transforms (`rqat_rotation` in its
/// quantization_config): the method and whether down_proj's input is rotated at run time.
package struct RotationSpec: Codable, Equatable, Sendable {
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

    /// The key of a quantization_config that holds it.
    package static let configKey = "rqat_rotation"

    package var jsonObject: [String: Any] {
        (try? JSONSerialization.jsonObject(with: JSONEncoder().encode(self))) as? [String: Any] ?? [:]
    }

    /// The rotation a quantization_config records; nil when none. A malformed one names the file.
    package static func read(quantizationConfig q: [String: Any], path: String) throws -> RotationSpec? {
        guard let object = q[configKey] else { return nil }
        guard JSONSerialization.isValidJSONObject(object),
              let spec = try? JSONDecoder().decode(RotationSpec.self, from: JSONSerialization.data(withJSONObject: object)) else {
            throw FormatError(path, "quantization_config.\(configKey) is not a valid rotation record; re-export the model with rqat ptq")
        }
        return spec
    }
}
