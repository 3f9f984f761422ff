// Machine behaviours: hardware, onboarding, resources, ports, node state and labels, status.
export const resourceBehaviors = [] as const
