"""JSON field types of core/v1 Affinity and the types it contains, generated from the
models of the `kubernetes` client (`openapi_types`, `attribute_map`); a test checks them against
the installed client. Types: str, int, bool, List[T], Dict[str, T] or another entry."""

TYPES: dict[str, dict[str, str]] = {
    "V1Affinity": {
        "nodeAffinity": "V1NodeAffinity",
        "podAffinity": "V1PodAffinity",
        "podAntiAffinity": "V1PodAntiAffinity",
    },
    "V1LabelSelector": {
        "matchExpressions": "List[V1LabelSelectorRequirement]",
        "matchLabels": "Dict[str, str]",
    },
    "V1LabelSelectorRequirement": {
        "key": "str",
        "operator": "str",
        "values": "List[str]",
    },
    "V1NodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": "List[V1PreferredSchedulingTerm]",
        "requiredDuringSchedulingIgnoredDuringExecution": "V1NodeSelector",
    },
    "V1NodeSelector": {
        "nodeSelectorTerms": "List[V1NodeSelectorTerm]",
    },
    "V1NodeSelectorRequirement": {
        "key": "str",
        "operator": "str",
        "values": "List[str]",
    },
    "V1NodeSelectorTerm": {
        "matchExpressions": "List[V1NodeSelectorRequirement]",
        "matchFields": "List[V1NodeSelectorRequirement]",
    },
    "V1PodAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": "List[V1WeightedPodAffinityTerm]",
        "requiredDuringSchedulingIgnoredDuringExecution": "List[V1PodAffinityTerm]",
    },
    "V1PodAffinityTerm": {
        "labelSelector": "V1LabelSelector",
        "matchLabelKeys": "List[str]",
        "mismatchLabelKeys": "List[str]",
        "namespaceSelector": "V1LabelSelector",
        "namespaces": "List[str]",
        "topologyKey": "str",
    },
    "V1PodAntiAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": "List[V1WeightedPodAffinityTerm]",
        "requiredDuringSchedulingIgnoredDuringExecution": "List[V1PodAffinityTerm]",
    },
    "V1PreferredSchedulingTerm": {
        "preference": "V1NodeSelectorTerm",
        "weight": "int",
    },
    "V1WeightedPodAffinityTerm": {
        "podAffinityTerm": "V1PodAffinityTerm",
        "weight": "int",
    },
}
