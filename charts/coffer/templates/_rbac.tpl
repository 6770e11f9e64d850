{{/*
The controller's rules, shared by the ClusterRole (every namespace) and the Role
(watchNamespace). Every rule says why it is there; the e2e tests run the controller bound to
exactly these rules.
*/}}
{{- define "coffer.controllerRules" -}}
# Watch the three kinds it reconciles.
- apiGroups: ["coffer.dev"]
  resources: ["backupschedules", "backups", "restorerequests"]
  verbs: ["get", "list", "watch"]
# Read the Notifiers that schedules and Backups name when it notifies, and watch them for
# the test-notification annotation.
- apiGroups: ["coffer.dev"]
  resources: ["notifiers"]
  verbs: ["get", "list", "watch"]
# Add and remove the data-deleting finalizer on Backups, and on RestoreRequests the one
# that keeps a request until the workloads it stopped are scaled back.
- apiGroups: ["coffer.dev"]
  resources: ["backups", "restorerequests"]
  verbs: ["patch"]
# Schedules create their runs' Backups; Replace and retention delete them.
- apiGroups: ["coffer.dev"]
  resources: ["backups"]
  verbs: ["create", "delete"]
# Write the status of every kind (server-side apply patches only).
- apiGroups: ["coffer.dev"]
  resources: ["backupschedules/status", "backups/status", "restorerequests/status", "notifiers/status"]
  verbs: ["patch"]
# Worker Jobs carry blockOwnerDeletion owner references to Backups and RestoreRequests.
- apiGroups: ["coffer.dev"]
  resources: ["backups/finalizers", "restorerequests/finalizers"]
  verbs: ["update"]
# Run workers as Jobs, watch them, and delete a running one when its Backup goes.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
# Read a finished worker's summary from its Pod's termination message; during a restore,
# see that the quiesced workloads' Pods are gone.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# Check that referenced Secrets exist before making a Job (the controller requests only
# their metadata; RBAC cannot grant metadata alone). The values of sources' and stores'
# Secrets reach workers through secretKeyRef, never through the controller; the one values
# the controller reads are those a Notifier names (webhook URLs, SMTP credentials), when
# it sends a notification.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# Check that referenced PersistentVolumeClaims exist.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get"]
# Make the permission-less worker ServiceAccount in namespaces that run backups.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "create"]
# Scale the workloads a RestoreRequest names to zero and back, through the scale
# subresource only: the controller cannot change anything else about them.
- apiGroups: ["apps"]
  resources: ["deployments/scale", "statefulsets/scale"]
  verbs: ["get", "patch"]
# Record Events on the objects it reconciles.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
